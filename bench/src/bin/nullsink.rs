//! tapflow-nullsink: a processor that does nothing. Binds a ZeroMQ PULL socket where a collector
//! pushes, decodes every message (so the collector's wire format is paid for on both ends), counts
//! summaries and bytes, and exits once every expected link has sent its end of stream. The
//! collector's cost without a processor's: what `bench/live.sh` measures live capture against.
//!
//! Usage: tapflow-nullsink --listen tcp://127.0.0.1:5601 [--links 1]

use std::process::ExitCode;

use clap::Parser;
use tapflow_proto::Message;

#[derive(Parser)]
#[command(about = "Receives a collector's batches, counts them and discards them")]
struct Args {
    /// ZeroMQ endpoint to bind.
    #[arg(long)]
    listen: String,
    /// Ends of stream to wait for (one per collector).
    #[arg(long, default_value_t = 1)]
    links: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ctx = zmq::Context::new();
    let socket = match ctx
        .socket(zmq::PULL)
        .and_then(|s| s.bind(&args.listen).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tapflow-nullsink: cannot bind {}: {e}", args.listen);
            return ExitCode::from(3);
        }
    };
    let (mut messages, mut bytes, mut summaries, mut malformed, mut eos) =
        (0u64, 0u64, 0u64, 0u64, 0);
    let mut buf = zmq::Message::new();
    while eos < args.links {
        if let Err(e) = socket.recv(&mut buf, 0) {
            eprintln!("tapflow-nullsink: receive failed: {e}");
            return ExitCode::from(1);
        }
        messages += 1;
        bytes += buf.len() as u64;
        match Message::decode(&buf) {
            Ok(Message::Batch { summaries: s, .. }) => summaries += s.len() as u64,
            Ok(Message::Eos { .. }) => eos += 1,
            Ok(_) => {}
            Err(_) => malformed += 1,
        }
    }
    println!("messages={messages} bytes={bytes} summaries={summaries} malformed={malformed}");
    ExitCode::SUCCESS
}
