//! Fault injection for a running pipeline: SIGKILL one process and start it again with exactly
//! the command line it had (read back from `/proc`, so flags added to every spawned binary are
//! kept), plus a steady, bounded traffic source on loopback.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use tapflow_proto::{shard, Addr, FiveTuple};

use crate::{Proc, RunningPipeline};

/// Which process of a pipeline.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Collector(usize),
    Processor(usize),
    Aggregator,
}

/// A process killed by [`kill_and_restart`]: its exit status and what it logged.
pub struct Killed {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

/// The program and arguments of a running process, from `/proc/PID/cmdline`.
pub fn command_line(pid: u32) -> (PathBuf, Vec<String>) {
    let raw = crate::read_file(Path::new(&format!("/proc/{pid}/cmdline")));
    let mut parts = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let program = PathBuf::from(parts.next().unwrap_or_default());
    (program, parts.collect())
}

fn slot(p: &mut RunningPipeline, role: Role) -> &mut Proc {
    match role {
        Role::Collector(i) => &mut p.collectors[i],
        Role::Processor(i) => &mut p.processors[i],
        Role::Aggregator => &mut p.aggregator,
    }
}

/// SIGKILLs a process of the pipeline and waits for it to be gone.
pub fn kill(p: &mut RunningPipeline, role: Role) -> Killed {
    let proc = slot(p, role);
    let _ = proc.child.kill();
    let status = proc.child.wait().ok();
    Killed {
        status,
        stderr: proc.stderr(),
    }
}

/// The command line a process was started with, to start it again.
pub struct Restart {
    role: Role,
    program: PathBuf,
    args: Vec<String>,
}

/// SIGKILLs a process, remembering its command line for [`restart`].
pub fn kill_for_restart(p: &mut RunningPipeline, role: Role) -> (Killed, Restart) {
    let proc = slot(p, role);
    if let Ok(Some(status)) = proc.child.try_wait() {
        panic!(
            "{} had already exited ({status}):\n{}",
            proc.name,
            proc.stderr()
        );
    }
    let (program, args) = command_line(proc.child.id());
    (
        kill(p, role),
        Restart {
            role,
            program,
            args,
        },
    )
}

/// Starts a killed process again with the same command line (a new incarnation under the
/// same name and ports); its stderr goes to `<name>.2.stderr`.
pub fn restart(p: &mut RunningPipeline, r: Restart) {
    let dir = p.dir.path().to_path_buf();
    let proc = slot(p, r.role);
    let name = format!("{}.2", proc.name);
    *proc = Proc::spawn(&name, &r.program, &r.args, &dir);
}

/// Sends a signal (e.g. "TERM") to a process by pid.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{signal} {pid} failed");
}

/// `flows` UDP flows from distinct source ports to `127.0.0.1:port`, one datagram per flow
/// every `interval`, each flow's shard among `n` processors known in advance.
pub struct UdpFlows {
    socks: Vec<UdpSocket>,
    port: u16,
    /// The receiving socket, so the kernel answers no datagram with ICMP unreachable.
    _sink: UdpSocket,
    pub shards: Vec<u16>,
    pub sent: u64,
}

impl UdpFlows {
    pub fn new(port: u16, flows: usize, n: u16) -> UdpFlows {
        let sink = UdpSocket::bind(("127.0.0.1", port)).expect("bind the UDP sink");
        let socks: Vec<UdpSocket> = (0..flows)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket"))
            .collect();
        let shards = socks
            .iter()
            .map(|s| {
                let sport = s.local_addr().map(|a| a.port()).unwrap_or(0);
                let t = FiveTuple {
                    proto: 17,
                    src: Addr::from_v4([127, 0, 0, 1]),
                    dst: Addr::from_v4([127, 0, 0, 1]),
                    sport,
                    dport: port,
                };
                shard(&t.key(0).0, n)
            })
            .collect();
        UdpFlows {
            socks,
            port,
            _sink: sink,
            shards,
            sent: 0,
        }
    }

    /// Flows whose shard is `s`.
    pub fn on_shard(&self, s: u16) -> u64 {
        self.shards.iter().filter(|&&x| x == s).count() as u64
    }

    /// One datagram on every flow.
    pub fn round(&mut self) {
        for (i, s) in self.socks.iter().enumerate() {
            let payload = format!("tapflow fault test flow {i} datagram {}", self.sent);
            s.send_to(payload.as_bytes(), ("127.0.0.1", self.port))
                .expect("send a datagram");
            self.sent += 1;
        }
    }

    /// Rounds every `interval` until `until`.
    pub fn run_until(&mut self, until: Instant, interval: Duration) {
        while Instant::now() < until {
            self.round();
            std::thread::sleep(interval);
        }
    }
}

/// A TCP server on `127.0.0.1:port` that reads each connection to its end, and a client
/// making short connections to it (SYN ... FIN: `SF` sessions).
pub struct TcpSessions {
    port: u16,
    pub made: u64,
}

impl TcpSessions {
    pub fn new(port: u16) -> TcpSessions {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the TCP listener");
        std::thread::spawn(move || {
            for c in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut c = c;
                    let _ = std::io::copy(&mut c, &mut std::io::sink());
                });
            }
        });
        TcpSessions { port, made: 0 }
    }

    /// One connection: connect, send a line, close, wait for the server's close.
    pub fn one(&mut self) {
        use std::io::{Read, Write};
        let mut c =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the TCP listener");
        c.write_all(b"tapflow fault test\n")
            .expect("write to the TCP connection");
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        self.made += 1;
    }
}
