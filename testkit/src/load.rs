//! A small closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each
//! sending its next request as soon as the previous answer arrived, for a fixed duration.
//! Latencies go into an HDR histogram (microseconds).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
    body: Vec<u8>,
    auth: Option<String>,
}

impl Conn {
    /// Connect to `host:port`.
    pub async fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: addr.to_owned(),
            line: String::new(),
            body: Vec::new(),
            auth: None,
        })
    }

    /// Open a new connection to the same address (after the server closed this one).
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        let stream = TcpStream::connect(&self.host)
            .await
            .with_context(|| format!("connecting {}", self.host))?;
        stream.set_nodelay(true)?;
        self.stream = BufReader::new(stream);
        Ok(())
    }

    /// Send `Authorization: Bearer <key>` with every request.
    pub fn with_bearer(mut self, key: Option<&str>) -> Self {
        self.auth = key.map(|k| format!("Authorization: Bearer {k}\r\n"));
        self
    }

    /// Send one request and read the whole answer; returns the status and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, &[u8])> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(auth) = &self.auth {
            head.push_str(auth);
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        if let Some(body) = body {
            stream.write_all(body).await?;
        }
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok((status, &self.body))
    }
}

/// Result of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise (or failed).
    pub errors: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency histogram of every request, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A request: method, path, optional body.
pub type Request = (&'static str, String, Option<Vec<u8>>);

/// Run `connections` closed loops for `duration` against `addr`; `next(conn_index, seq)` builds
/// each request.
pub async fn run<F>(
    addr: &str,
    connections: usize,
    duration: Duration,
    next: F,
) -> anyhow::Result<LoadReport>
where
    F: Fn(usize, u64) -> Request + Send + Sync + 'static,
{
    let next = std::sync::Arc::new(next);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let next = next.clone();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors, mut seq) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let (method, path, body) = next(c, seq);
                seq += 1;
                let t = Instant::now();
                match conn.request(method, &path, body.as_deref()).await {
                    Ok((status, _)) if (200..300).contains(&status) => ok += 1,
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = Conn::open(&addr).await?;
                    }
                }
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok((ok, errors, hist))
        }));
    }
    let mut report = LoadReport {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (ok, errors, hist) = task.await??;
        report.ok += ok;
        report.errors += errors;
        report.latency_us.add(hist)?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
