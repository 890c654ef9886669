//! `tapflow-influxbench`: the aggregator's record path and its InfluxDB write rate.
//!
//! 1. Merge + encode: `--records` synthetic final connection records (a realistic mix of
//!    states, thousands starting in the same microsecond) from 2 "processors" go through the
//!    aggregator's ordering buffer (`ConnSorter`), detection, the conn-log JSON and the line
//!    protocol encoder: records/s on one core.
//! 2. Write rate: the same records as points through `InfluxWriter` (batches of 5000, gzip)
//!    into a real local influxd (Debian's, started here on a temporary directory), until the
//!    writer has everything acknowledged; next to it, `curl` posting the same gzip batches one
//!    after the other to the same server (a fresh database). Points/s and the ratio.
//!
//! `cargo build --release -p tapflow-bench && target/release/tapflow-influxbench [--records N]`

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tapflow_aggregator::conns::{conn_json, ConnSorter};
use tapflow_aggregator::detect::{DetectConfig, Detector};
use tapflow_aggregator::influx::{conn_point, InfluxApi, InfluxConfig, InfluxWriter, Point};
use tapflow_proto::upstream::ConnBatch;

struct Influxd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_influxd() -> Result<Influxd> {
    let dir = tempfile::tempdir()?;
    let (http, rpc) = (free_port()?, free_port()?);
    let d = dir.path().display();
    let conf = dir.path().join("influxdb.conf");
    std::fs::write(
        &conf,
        format!("reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n[logging]\n  level = \"warn\"\n"),
    )?;
    let child = Command::new("influxd")
        .arg("-config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("influxd (Debian package influxdb) is needed")?;
    let url = format!("http://127.0.0.1:{http}");
    for _ in 0..200 {
        if Command::new("curl")
            .args(["-fs", &format!("{url}/ping")])
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(Influxd {
                child,
                url,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("influxd did not answer /ping")
}

fn curl(args: &[&str]) -> Result<()> {
    let out = Command::new("curl").args(args).output()?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // A user error (a wrong flag, a missing file) is one line, never a backtrace.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapflow-influxbench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let mut n: u64 = 200_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => n = args.next().context("--records N")?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let all = tapflow_bench::records::conn_records(n);

    // 1. Merge (ordering buffer), detection, conn-log JSON and line protocol, one core.
    let mut rates = Vec::new();
    let mut lines_bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut sorter = ConnSorter::new(2, 10_000_000);
        let mut detector = Detector::new(DetectConfig::default());
        let (mut json, mut events, mut points, mut line) =
            (String::new(), Vec::new(), Vec::new(), Vec::new());
        for (p, half) in ["p0", "p1"].iter().zip(all.chunks(all.len().div_ceil(2))) {
            sorter.push(ConnBatch {
                processor: (*p).into(),
                incarnation: 1,
                watermark_ns: u64::MAX,
                settle_ns: 0,
                records: half.to_vec(),
                tunnel_outers: vec![],
                traffic: vec![],
                records_seq: 0,
            });
        }
        sorter.drain_with(|r, parents| {
            conn_json(r, parents, &mut json);
            detector.on_record(r, &mut events);
            points.push(conn_point(r, parents));
        });
        detector.finish(&mut events);
        for p in &points {
            let _ = p.encode(&mut line);
        }
        let secs = t.elapsed().as_secs_f64();
        lines_bytes = line.len();
        rates.push(n as f64 / secs);
        println!(
            "merge+detect+json+line protocol: {:.0} records/s ({} JSON bytes, {} line bytes)",
            n as f64 / secs,
            json.len(),
            line.len()
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "MEDIAN merge+encode: {:.0} records/s; {:.0} line-protocol bytes per point",
        rates[1],
        lines_bytes as f64 / n as f64
    );

    // 2. Write rate against a real influxd: the writer, then curl with the same gzip batches.
    let influx = start_influxd()?;
    let spool = tempfile::tempdir()?;
    let points: Vec<Point> = all.iter().map(|r| conn_point(r, &[])).collect();
    let t = Instant::now();
    let mut writer = InfluxWriter::start(InfluxConfig::new(
        influx.url.clone(),
        InfluxApi::V1 {
            db: "bench".into(),
            rp: None,
            user: None,
            password: None,
        },
        spool.path(),
    ))?;
    writer.send(points);
    let stats = writer.finish(Duration::from_secs(600));
    let writer_secs = t.elapsed().as_secs_f64();
    if stats.points_written != n {
        bail!("writer wrote {} of {n}: {stats:?}", stats.points_written);
    }
    let writer_rate = n as f64 / writer_secs;
    println!("InfluxWriter: {n} points in {writer_secs:.2} s = {writer_rate:.0} points/s ({} requests, {} collisions)", stats.requests_ok, stats.collisions);

    // The same lines, gzip batches of 5000, posted by curl one after the other.
    let files = tempfile::tempdir()?;
    let mut line = Vec::new();
    let mut batches = Vec::new();
    for (i, chunk) in all.chunks(5000).enumerate() {
        line.clear();
        for r in chunk {
            let _ = conn_point(r, &[]).encode(&mut line);
        }
        let path = files.path().join(format!("b{i}.gz"));
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path)?,
            flate2::Compression::fast(),
        );
        gz.write_all(&line)?;
        gz.finish()?;
        batches.push(path);
    }
    curl(&[
        "-fs",
        "-XPOST",
        &format!("{}/query", influx.url),
        "--data-urlencode",
        "q=CREATE DATABASE curlbench",
    ])?;
    let t = Instant::now();
    for b in &batches {
        curl(&[
            "-fs",
            "-XPOST",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{}", b.display()),
            &format!("{}/write?db=curlbench&precision=ns", influx.url),
        ])?;
    }
    let curl_secs = t.elapsed().as_secs_f64();
    let curl_rate = n as f64 / curl_secs;
    println!("curl, same gzip batches: {n} points in {curl_secs:.2} s = {curl_rate:.0} points/s");
    println!("RATIO writer / curl: {:.2}", writer_rate / curl_rate);
    Ok(())
}
