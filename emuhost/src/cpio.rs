//! A writer for the "newc" cpio format, the only one the kernel unpacks as an initramfs.
//!
//! Format: Linux Documentation/driver-api/early-userspace/buffer-format.rst. Each entry is
//! the magic "070701", thirteen 8-digit hex fields (ino, mode, uid, gid, nlink, mtime,
//! filesize, devmajor, devminor, rdevmajor, rdevminor, namesize including the NUL, check),
//! the name, NUL-padded to a multiple of 4 bytes counted from the entry start, then the
//! data, padded to 4. "TRAILER!!!" ends an archive; the kernel accepts several archives
//! concatenated, which lets a cached part be reused between runs.

use std::collections::BTreeSet;

/// S_IFDIR, S_IFREG, S_IFCHR from include/uapi/linux/stat.h.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// An archive under construction. Parent directories are added on demand.
#[derive(Default)]
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Archive {
    pub fn new() -> Self {
        Archive {
            next_ino: 1,
            ..Archive::default()
        }
    }

    /// A regular file; `path` is absolute in the guest.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let name = self.parents(path);
        self.entry(&name, S_IFREG | mode, data, (0, 0));
    }

    /// A directory (0755).
    pub fn dir(&mut self, path: &str) {
        let name = self.parents(path);
        if self.dirs.insert(name.clone()) {
            self.entry(&name, S_IFDIR | 0o755, &[], (0, 0));
        }
    }

    /// A character device node (0600).
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        let name = self.parents(path);
        self.entry(&name, S_IFCHR | 0o600, &[], (major, minor));
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }

    /// Adds the missing parents of `path` and returns its name without the leading '/'.
    fn parents(&mut self, path: &str) -> String {
        let name = path.trim_start_matches('/').to_owned();
        let mut prefix = String::new();
        let components: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();
        for c in components.iter().take(components.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            if self.dirs.insert(prefix.clone()) {
                let p = prefix.clone();
                self.entry(&p, S_IFDIR | 0o755, &[], (0, 0));
            }
        }
        name
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            // The kernel's field is 32 bits; initramfs members are far smaller.
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, data) triples, checking magic and alignment on the way.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let start_len = b.len();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert_eq!((start_len - b.len() + next) % 4, 0);
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn entries_round_trip_with_parents_first() {
        let mut a = Archive::new();
        a.file("/emuhost/modules/01-9p.ko", 0o644, b"abcde");
        a.dir("/emuhost");
        a.char_dev("/dev/console", 5, 1);
        let entries = parse(&a.finish());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "emuhost",
                "emuhost/modules",
                "emuhost/modules/01-9p.ko",
                "dev",
                "dev/console"
            ]
        );
        assert_eq!(entries[2].1, 0o100644);
        assert_eq!(entries[2].2, b"abcde");
        assert_eq!(entries[4].1, 0o020600);
    }
}
