//! Operating-system limits: the open-files limit a server starts with, and what happens when
//! every file descriptor is taken (the real binary, since limits are per process).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::KillOnDrop;
use crate::persistence::spawn_binary_after;

/// (soft, hard) `Max open files` of a process, from `/proc`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    (numbers[0], numbers[1])
}

/// CPU time a process has used (user and system, all threads).
fn cpu_time(pid: u32) -> Duration {
    Duration::from_secs_f64(berth::bench::process_cpu_seconds(&pid.to_string()))
}

/// `GET /healthz` answered 200 within 2 s (plain HTTP/1.1 over a socket: no client pool).
fn healthy(base: &str) -> bool {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").parse().unwrap();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /healthz HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n";
    let mut response = Vec::new();
    stream.write_all(request).is_ok()
        && stream.read_to_end(&mut response).is_ok()
        && response.starts_with(b"HTTP/1.1 200")
}

#[test]
fn serve_raises_its_soft_open_files_limit_to_the_hard_limit() {
    let data_dir = tempfile::tempdir().unwrap();
    let (child, _) = spawn_binary_after("ulimit -Sn 256", data_dir.path());
    let (soft, hard) = open_files_limits(child.id());
    drop(KillOnDrop(child));
    assert!(hard > 256, "this machine's hard limit ({hard}) leaves nothing to raise");
    assert_eq!(soft, hard, "soft limit {soft}, hard limit {hard}");
}

/// Out of file descriptors, a server must neither spin on failed accepts nor stop accepting:
/// once descriptors are free again, it serves as before.
#[test]
fn out_of_file_descriptors_the_server_waits_and_recovers() {
    let data_dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn_binary_after("ulimit -n 160", data_dir.path());
    let server = KillOnDrop(child);
    assert!(healthy(&base));
    let addr = base.trim_start_matches("http://").parse().unwrap();
    // More connections than the server may have descriptors: those it cannot accept wait in the
    // listen queue (until that is full too, when connecting times out).
    let connections: Vec<TcpStream> =
        (0..200).map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect();
    assert!(connections.len() > 160, "only {} connections", connections.len());
    std::thread::sleep(Duration::from_millis(500));
    let (before, started) = (cpu_time(server.0.id()), Instant::now());
    assert!(before > Duration::ZERO, "the server's CPU time cannot be read");
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(server.0.id()) - before;
    let window = started.elapsed();
    drop(connections);
    // A server spinning on accept would use a whole core for the whole window.
    assert!(used < window / 4, "used {used:?} of CPU in {window:?} while out of descriptors");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(&base) {
        assert!(Instant::now() < deadline, "the server did not accept again once descriptors were free");
        std::thread::sleep(Duration::from_millis(100));
    }
}
