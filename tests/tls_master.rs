//! TLS to the masters: a CA file makes a private CA trusted, verification is
//! on by default, and `tls_verify = false` is the explicit way out. The
//! server is `openssl s_server` with a CA and a certificate made here.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groupd::source::http::{MasterClient, MasterSettings, Timeouts};

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a second CA
/// that signed nothing.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=groupd test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=unrelated CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName = IP:127.0.0.1\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn start() -> Server {
    let dir = std::env::temp_dir().join(format!("groupd-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www/v2")).expect("temp dir");
    make_pki(&dir);
    std::fs::write(dir.join("www/v2/info"), "{\"name\":\"marathon\"}").expect("write doc");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(dir.join("server.pem"))
        .arg("-key")
        .arg(dir.join("server.key"))
        .current_dir(dir.join("www"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = Server { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn settings(server: &Server, ca: Option<&str>, verify: bool) -> MasterSettings {
    MasterSettings {
        urls: vec![format!("https://127.0.0.1:{}", server.port)],
        username: None,
        password_file: None,
        token_file: None,
        ca_file: ca.map(|c| server.dir.join(c)),
        tls_verify: verify,
        timeouts: Timeouts {
            connect: Duration::from_secs(3),
            headers: Duration::from_secs(5),
            ..Timeouts::default()
        },
    }
}

async fn fetch(s: &MasterSettings) -> Result<Vec<u8>, String> {
    let client = MasterClient::new(s).map_err(|e| e.to_string())?;
    client
        .get("/v2/info", "application/json")
        .await
        .map(|b| b.bytes)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_ca_file_is_trusted_and_verification_is_on_by_default() {
    let server = start();
    let body = fetch(&settings(&server, Some("ca.pem"), true))
        .await
        .expect("the CA file makes the server trusted");
    assert_eq!(body, b"{\"name\":\"marathon\"}");

    let err = fetch(&settings(&server, None, true))
        .await
        .expect_err("a private CA is not trusted without ca_file");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "the error says it is TLS: {err}"
    );

    let err = fetch(&settings(&server, Some("other.pem"), true))
        .await
        .expect_err("the wrong CA is refused");
    assert!(!err.is_empty());

    let body = fetch(&settings(&server, None, false))
        .await
        .expect("tls_verify = false accepts any certificate");
    assert_eq!(body, b"{\"name\":\"marathon\"}");
}
