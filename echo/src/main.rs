//! `cube-echo`: the test workload of Cube, the role of the book's echo server.
//!
//! - `POST /` answers 200 with the request body.
//! - `GET /health` answers 200 `OK`; `GET /healthfail` answers 500.
//! - Anything else answers 404.
//!
//! Settings, from the environment:
//! - `PORT` (default 7777): the port to listen on, on all addresses.
//! - `EXIT_CODE` and `EXIT_AFTER_MS`: exit with that code after that many milliseconds
//!   (a code alone exits at once; a delay alone exits 0). Cube's simulated runtime reads the same
//!   two variables, so one task behaves alike on both runtimes.
//!
//! It prints one line per request to stdout and exits 0 on SIGTERM, so `docker stop` is quick.
//! It uses only std and libc, so it links statically and runs in a `FROM scratch` image.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

extern "C" fn on_sigterm(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

fn env_number<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

fn main() {
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_sigterm as *const () as libc::sighandler_t);
    }
    let exit_code: Option<i32> = env_number("EXIT_CODE");
    let exit_after: Option<u64> = env_number("EXIT_AFTER_MS");
    if exit_code.is_some() || exit_after.is_some() {
        let code = exit_code.unwrap_or(0);
        let delay = Duration::from_millis(exit_after.unwrap_or(0));
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            println!("cube-echo: exiting with code {code} as asked");
            std::process::exit(code);
        });
    }
    let port: u16 = env_number("PORT").unwrap_or(7777);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cube-echo: cannot listen on port {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("cube-echo: listening on port {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("cube-echo: {e}");
            }
        });
    }
}

/// Answers one request, then closes the connection.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0).min(1 << 20);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    println!("cube-echo: {method} {path}");
    let (status, content_type, reply): (&str, &str, Vec<u8>) = match (method, path) {
        ("POST", "/") => ("200 OK", "application/json", body),
        ("GET", "/health") => ("200 OK", "text/plain", b"OK".to_vec()),
        ("GET", "/healthfail") => (
            "500 Internal Server Error",
            "text/plain",
            b"unhealthy".to_vec(),
        ),
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    stream.write_all(&reply)?;
    stream.flush()
}
