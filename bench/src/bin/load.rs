//! Pushes profile files to a server and times queries against it.
//!
//! `load URL DIR CONCURRENCY QUERIES`
//!
//! Every `instance-III-window-WWWW.pb.gz` under DIR (as `make-profiles`
//! writes them) is pushed as it is (Connect push, the gzipped pprof as the
//! raw profile) with labels `service_name=bench`, `instance=III`,
//! CONCURRENCY requests in flight. Then `/pyroscope/render` over all of it
//! is asked QUERIES times. Prints one JSON line: files, bytes, ingest
//! seconds, query seconds (each).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_profile::push::PushRequest;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: load URL DIR CONCURRENCY QUERIES");
    }
    let url = args[1].trim_end_matches('/').to_string();
    let mut files: Vec<_> = std::fs::read_dir(&args[2])
        .with_context(|| args[2].clone())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz"))
        .collect();
    files.sort();
    let concurrency: usize = args[3].parse().context("CONCURRENCY")?;
    let queries: usize = args[4].parse().context("QUERIES")?;
    let mut bodies = Vec::with_capacity(files.len());
    let mut bytes = 0usize;
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let instance = name.split('-').nth(1).unwrap_or("0").to_string();
        let raw = std::fs::read(f)?;
        bytes += raw.len();
        let req = PushRequest::single(
            "process_cpu",
            &[
                ("service_name".into(), "bench".into()),
                ("instance".into(), instance),
            ],
            raw,
            String::new(),
        );
        bodies.push(req.to_bytes());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = reqwest::Client::new();
    let t = Instant::now();
    rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for body in bodies {
            let permit = sem.clone().acquire_owned().await?;
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{url}{}", kiln_profile::push::PUSH_PATH))
                    .header("content-type", "application/proto")
                    .body(body)
                    .send()
                    .await;
                drop(permit);
                match r {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(anyhow::anyhow!("HTTP {}", r.status())),
                    Err(e) => Err(e.into()),
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let ingest = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let mut ticks = 0i64;
    for _ in 0..queries {
        let t = Instant::now();
        let v: serde_json::Value = rt.block_on(async {
            client
                .get(format!("{url}/pyroscope/render"))
                .query(&[
                    (
                        "query",
                        r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="bench"}"#,
                    ),
                    ("from", "0"),
                    ("until", "now"),
                    ("maxNodes", "8192"),
                ])
                .send()
                .await?
                .json()
                .await
        })?;
        times.push(t.elapsed().as_secs_f64());
        ticks = v["flamebearer"]["numTicks"].as_i64().unwrap_or(0);
    }
    println!(
        "{}",
        serde_json::json!({"files": files.len(), "bytes": bytes, "ingest_s": ingest, "query_s": times, "ticks": ticks})
    );
    Ok(())
}
