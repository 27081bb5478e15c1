//! The route files BIRD includes: `vips4.conf` and `vips6.conf`, one
//! static route per VIP through this process's device, in BIRD 2's
//! static-protocol syntax. Each file is written whole to a hidden
//! temporary name and renamed over the old one, so BIRD never reads half
//! a file, whenever it reads it.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The files, by address family.
pub const IPV4_FILE: &str = "vips4.conf";
pub const IPV6_FILE: &str = "vips6.conf";

/// The two files' contents for `vips`, routed through `device`.
pub fn render(vips: &[IpAddr], device: &str, node: &str) -> (String, String) {
    // The name ends up in a BIRD comment: a line break in it would start
    // configuration of the operator's choosing.
    let node: String = node
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let header = format!(
        "# Written by switchyard on node {node}: the VIPs it serves, routed\n\
         # through its device {device}, which goes away with the process.\n"
    );
    let (mut v4, mut v6) = (header.clone(), header);
    for vip in vips {
        match vip {
            IpAddr::V4(a) => v4.push_str(&format!("route {a}/32 via \"{device}\";\n")),
            IpAddr::V6(a) => v6.push_str(&format!("route {a}/128 via \"{device}\";\n")),
        }
    }
    (v4, v6)
}

/// The folder of the route files.
#[derive(Debug, Clone)]
pub struct RouteDir {
    dir: PathBuf,
}

impl RouteDir {
    /// Creates the folder if needed, and empty route files where there are
    /// none yet, so that a BIRD started later finds what it includes. An
    /// existing file is left alone: it may be another process's, which
    /// this one takes over.
    pub fn prepare(dir: &Path) -> std::io::Result<RouteDir> {
        fs::create_dir_all(dir)?;
        let routes = RouteDir {
            dir: dir.to_owned(),
        };
        for name in [IPV4_FILE, IPV6_FILE] {
            if !routes.dir.join(name).exists() {
                routes.replace(name, "# No VIP announced.\n")?;
            }
        }
        Ok(routes)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes both files for `vips`.
    pub fn write(&self, vips: &[IpAddr], device: &str, node: &str) -> std::io::Result<()> {
        let (v4, v6) = render(vips, device, node);
        self.replace(IPV4_FILE, &v4)?;
        self.replace(IPV6_FILE, &v6)
    }

    fn replace(&self, name: &str, contents: &str) -> std::io::Result<()> {
        let target = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(contents.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_goes_to_its_own_file_as_a_host_route_through_the_device() {
        let vips: Vec<IpAddr> = vec![
            "198.18.0.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
            "198.18.0.11".parse().unwrap(),
        ];
        let (v4, v6) = render(&vips, "syv42", "lb-1");
        let routes = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            routes(&v4),
            [
                "route 198.18.0.10/32 via \"syv42\";",
                "route 198.18.0.11/32 via \"syv42\";"
            ]
        );
        assert_eq!(routes(&v6), ["route 2001:db8::10/128 via \"syv42\";"]);
    }

    #[test]
    fn a_node_name_cannot_break_out_of_its_comment() {
        let (v4, _) = render(&[], "syv42", "lb\nprotocol static evil {}\r");
        assert!(v4.lines().all(|l| l.starts_with('#')), "{v4}");
    }

    #[test]
    fn no_vip_gives_files_without_routes() {
        let (v4, v6) = render(&[], "syv42", "lb-1");
        assert!(v4.lines().all(|l| l.starts_with('#')));
        assert!(v6.lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn prepare_creates_missing_files_and_keeps_existing_ones() {
        let dir = std::env::temp_dir().join(format!("swy-bgp-routes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(IPV4_FILE), "route 198.18.0.10/32 via \"syv1\";\n").unwrap();
        let routes = RouteDir::prepare(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(routes.path(IPV4_FILE)).unwrap(),
            "route 198.18.0.10/32 via \"syv1\";\n"
        );
        assert!(fs::read_to_string(routes.path(IPV6_FILE))
            .unwrap()
            .starts_with('#'));
        routes
            .write(&["198.18.0.12".parse().unwrap()], "syv2", "lb")
            .unwrap();
        assert!(fs::read_to_string(routes.path(IPV4_FILE))
            .unwrap()
            .contains("route 198.18.0.12/32 via \"syv2\";"));
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
