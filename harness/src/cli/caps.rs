//! `ras-harness caps`: what this host offers the scenarios.

use clap::Args;
use ras_harness::host;

#[derive(Args, Debug)]
pub struct CapsArgs {
    /// Print JSON (the report's "host" object) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CapsArgs) -> Result<u8, String> {
    let info = host::probe();
    if args.json {
        let json = serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?;
        println!("{json}");
        return Ok(0);
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let s = &info.support;
    println!("arch                {}", info.arch);
    println!("kernel              {}", info.kernel);
    println!("page size           {} bytes", info.page_size);
    println!("arm64 KVM           {}", yes(info.support.kvm));
    println!("KVM caps present    {:?}", s.caps);
    println!("root (SYS_ADMIN)    {}", yes(s.root));
    println!("memory failure      {}", yes(s.memory_failure));
    println!("hard_offline_page   {}", yes(s.hard_offline_page));
    println!("THP                 {}", yes(s.thp));
    println!(
        "free hugetlb 2M/1G  {}/{}",
        s.hugetlb_2m_free, s.hugetlb_1g_free
    );
    println!("writable ID regs    {}", yes(s.writable_id_regs));
    Ok(0)
}
