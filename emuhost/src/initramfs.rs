//! The per-run part of the initramfs: init, the console node and the run description.
//!
//! The run description is read by emuhost-init (emuhost/init/src/main.rs): NUL-terminated
//! fields, each kind followed by its values (`share` and `env` take two, the rest one).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::cpio::Archive;

/// emuhost-init, built for aarch64-unknown-linux-musl by build.rs.
const INIT: &[u8] = include_bytes!(env!("EMUHOST_INIT"));

/// What the guest's init is asked to do.
pub struct RunSpec<'a> {
    pub marker: &'a str,
    pub modules: &'a [String],
    /// (9p mount tag, guest path), mounted in this order.
    pub shares: &'a [(String, PathBuf)],
    pub env: &'a [(std::ffi::OsString, std::ffi::OsString)],
    pub exe: &'a OsStr,
    pub args: &'a [std::ffi::OsString],
    pub cwd: &'a OsStr,
    pub hugepages: u32,
    /// Where init writes the kernel's text symbols (from /proc/kallsyms), on a share, when
    /// they are not cached yet.
    pub symbols: Option<&'a OsStr>,
}

impl RunSpec<'_> {
    /// The description's bytes. Values cannot hold NUL (execve's strings cannot either).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let mut field = |kind: &str, values: &[&OsStr]| {
            b.extend_from_slice(kind.as_bytes());
            b.push(0);
            for v in values {
                b.extend_from_slice(v.as_bytes());
                b.push(0);
            }
        };
        field("marker", &[OsStr::new(self.marker)]);
        for m in self.modules {
            field("module", &[OsStr::new(m)]);
        }
        for (tag, path) in self.shares {
            field("share", &[OsStr::new(tag), path.as_os_str()]);
        }
        for (k, v) in self.env {
            field("env", &[k, v]);
        }
        field("exe", &[self.exe]);
        for a in self.args {
            field("arg", &[a]);
        }
        field("cwd", &[self.cwd]);
        let n = self.hugepages.to_string();
        field("hugepages", &[OsStr::new(&n)]);
        if let Some(path) = self.symbols {
            field("symbols", &[path]);
        }
        b
    }

    /// The archive holding /init, /dev/console (the kernel opens it for init's stdio before
    /// init mounts devtmpfs) and /emuhost/run.
    pub fn archive(&self) -> Vec<u8> {
        let mut a = Archive::new();
        a.file("/init", 0o755, INIT);
        // Major 5, minor 1: /dev/console (Documentation/admin-guide/devices.txt).
        a.char_dev("/dev/console", 5, 1);
        a.dir("/root");
        a.dir("/tmp");
        a.file("/emuhost/run", 0o644, &self.encode());
        a.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn description_fields_keep_spaces_and_quotes() {
        let env = [(OsString::from("RUST_LOG"), OsString::from("a=b c"))];
        let args = [OsString::from("it's \"quoted\""), OsString::from("")];
        let shares = [("emu0".to_owned(), PathBuf::from("/work/x y"))];
        let spec = RunSpec {
            marker: "M",
            modules: &["/emuhost/modules/00-9p.ko".into()],
            shares: &shares,
            env: &env,
            exe: OsStr::new("/work/x y/t"),
            args: &args,
            cwd: OsStr::new("/work/x y"),
            hugepages: 16,
            symbols: Some(OsStr::new("/work/symbols")),
        };
        let bytes = spec.encode();
        let text: Vec<String> = bytes
            .split(|&b| b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert_eq!(
            text,
            [
                "marker",
                "M",
                "module",
                "/emuhost/modules/00-9p.ko",
                "share",
                "emu0",
                "/work/x y",
                "env",
                "RUST_LOG",
                "a=b c",
                "exe",
                "/work/x y/t",
                "arg",
                "it's \"quoted\"",
                "arg",
                "",
                "cwd",
                "/work/x y",
                "hugepages",
                "16",
                "symbols",
                "/work/symbols",
                ""
            ]
        );
    }
}
