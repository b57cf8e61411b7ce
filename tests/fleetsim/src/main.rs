//! The `fleetsim` binary: parses the command line, starts the server, prints
//! `fleetsim listening on 127.0.0.1:PORT` and runs until SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use fleetsim::faults::FaultRule;
use fleetsim::fleet::Fleet;
use fleetsim::Options;

const USAGE: &str = "usage: fleetsim --fleet FILE [--port N] [--moto-url URL] [--lambda-url URL]
                [--speed X] [--invocation-visibility-ms N] [--pending-seconds N]
                [--fault JSON]... [--iam-url URL]
                [--lambda-timeout NAME=SECONDS]...

  --fleet FILE                 fleet file (TOML), required
  --port N                     port on 127.0.0.1 (default 4566; 0 = any free port)
  --moto-url URL               where unserved calls go, e.g. http://127.0.0.1:5000
  --lambda-url URL             where Lambda Invoke goes, e.g. http://127.0.0.1:9000
  --speed X                    simulated seconds per real second (default 60)
  --invocation-visibility-ms N InvocationDoesNotExist window after SendCommand (default 1500)
  --pending-seconds N          simulated seconds an invocation stays Pending (default 2)
  --fault JSON                 a fault rule, e.g. '{\"kind\":\"throttle\",\"operation\":\"SendCommand\",\"rate\":5}'
  --iam-url URL                IAM evaluator (tests/localstack/iam.py): every call is evaluated
  --lambda-timeout NAME=SECS   a function's Timeout (the template's); past it Invoke answers
                               Sandbox.Timedout while the invocation runs on";

fn parse() -> Result<(PathBuf, Options), String> {
    let mut args = std::env::args().skip(1);
    let mut fleet_path = None;
    let mut port = 4566u16;
    let mut moto = None;
    let mut lambda = None;
    let mut speed = None;
    let mut visibility = None;
    let mut pending = None;
    let mut faults = Vec::new();
    let mut iam_url = None;
    let mut lambda_timeouts = std::collections::BTreeMap::new();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--fleet" => fleet_path = Some(PathBuf::from(value("--fleet")?)),
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--moto-url" => moto = Some(value("--moto-url")?),
            "--lambda-url" => lambda = Some(value("--lambda-url")?),
            "--speed" => {
                speed = Some(
                    value("--speed")?
                        .parse()
                        .map_err(|e| format!("--speed: {e}"))?,
                )
            }
            "--invocation-visibility-ms" => {
                visibility = Some(value(&a)?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--pending-seconds" => {
                pending = Some(value(&a)?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--fault" => {
                let rule: FaultRule = serde_json::from_str(&value("--fault")?)
                    .map_err(|e| format!("--fault: {e}"))?;
                faults.push(rule);
            }
            "--iam-url" => iam_url = Some(value("--iam-url")?),
            "--lambda-timeout" => {
                let v = value("--lambda-timeout")?;
                let (name, secs) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--lambda-timeout: expected NAME=SECONDS, got {v}"))?;
                let secs: f64 = secs
                    .parse()
                    .map_err(|e| format!("--lambda-timeout {name}: {e}"))?;
                lambda_timeouts.insert(name.to_string(), secs);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let path = fleet_path.ok_or_else(|| format!("--fleet is required\n{USAGE}"))?;
    let fleet = Fleet::load(&path).map_err(|e| e.to_string())?;
    let mut opts = Options::new(fleet);
    opts.port = port;
    opts.moto_url = moto;
    opts.lambda_url = lambda;
    opts.speed = speed;
    opts.invocation_visibility_ms = visibility;
    opts.pending_seconds = pending;
    opts.faults = faults;
    opts.iam_url = iam_url;
    opts.lambda_timeouts = lambda_timeouts;
    Ok((path, opts))
}

#[tokio::main]
async fn main() {
    let (_path, opts) = match parse() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let running = match fleetsim::start(opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetsim: {e}");
            std::process::exit(1);
        }
    };
    println!("fleetsim listening on {}", running.addr);
    let _ = std::io::stdout().flush();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleetsim: cannot install SIGTERM handler: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
}
