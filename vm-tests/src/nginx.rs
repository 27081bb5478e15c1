//! nginx (Debian's `nginx` and `libnginx-mod-stream`) as a backend that
//! reads the PROXY protocol: the kind of server a `fullnat` listener with
//! `proxyProtocol` is for, parsing the header with its own code. One
//! process per backend namespace (no master, no daemon), its files in a
//! temporary directory, killed by PID on drop.
//!
//! Two servers, both requiring the header:
//! - a stream server on `greeting_port` that speaks first: it writes what
//!   the header told it (client, VIP) and the peer it saw (the LB's SNAT
//!   address), then closes, without reading a byte from the client;
//! - an HTTP server on `http_port` with WebDAV `PUT` under `/files/` and
//!   `GET /client` answering the header's client address.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::{in_netns, Netns};
use crate::poll::poll_until;
use crate::process::kill_and_reap;
use crate::tempdir::TempDir;

const NGINX: &str = "/usr/sbin/nginx";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Nginx {
    child: Child,
    dir: TempDir,
    name: String,
}

impl Nginx {
    /// Starts nginx in `ns`, named `name` in what it answers.
    pub fn start(ns: &Netns, name: &str, greeting_port: u16, http_port: u16) -> Result<Nginx> {
        for needed in [NGINX, STREAM_MODULE] {
            if !std::path::Path::new(needed).exists() {
                bail!("{needed} is missing: install the Debian packages nginx and libnginx-mod-stream (make test does)");
            }
        }
        let dir = TempDir::new(&format!("nginx-{name}"))?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("www/files"))?;
        let config = dir.write("nginx.conf", &config(&root, name, greeting_port, http_port))?;
        let mut command = ns.command(NGINX);
        command
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(root.join("startup.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("starting nginx in {}", ns.name()))?;
        let mut nginx = Nginx {
            child,
            dir,
            name: name.to_owned(),
        };
        for port in [greeting_port, http_port] {
            let at: SocketAddr = (IpAddr::from([127, 0, 0, 1]), port).into();
            let listening = poll_until(START_TIMEOUT, "nginx listening", || {
                if let Some(status) = nginx.child.try_wait()? {
                    bail!("nginx {name} exited with {status}: {}", nginx.logs());
                }
                let connected = in_netns(ns, || TcpStream::connect_timeout(&at, START_TIMEOUT))?;
                Ok(connected.ok().map(|_| ()))
            });
            if let Err(error) = listening {
                kill_and_reap(&mut nginx.child);
                return Err(error);
            }
        }
        Ok(nginx)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A file a client `PUT` under `/files/`, as this server stored it.
    pub fn uploaded(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join("www/files").join(file)).ok()
    }

    /// Stores `bytes` as `/files/FILE`, as a client's `PUT` would.
    pub fn put(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.path().join("www/files").join(file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Its startup and error logs, for a failure's message.
    pub fn logs(&self) -> String {
        ["startup.log", "error.log"]
            .iter()
            .map(|log| std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn config(root: &std::path::Path, name: &str, greeting_port: u16, http_port: u16) -> String {
    let root = root.display();
    format!(
        r#"load_module {STREAM_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen 0.0.0.0:{greeting_port} proxy_protocol;
        listen [::]:{greeting_port} proxy_protocol ipv6only=on;
        return "{name} client=$proxy_protocol_addr:$proxy_protocol_port vip=$proxy_protocol_server_addr:$proxy_protocol_server_port peer=$remote_addr\n";
    }}
}}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 0.0.0.0:{http_port} proxy_protocol;
        listen [::]:{http_port} proxy_protocol ipv6only=on;
        root {root}/www;
        client_max_body_size 64m;
        location /files/ {{
            dav_methods PUT;
            create_full_put_path on;
        }}
        location = /client {{
            default_type text/plain;
            return 200 "{name} $proxy_protocol_addr:$proxy_protocol_port\n";
        }}
    }}
}}
"#
    )
}
