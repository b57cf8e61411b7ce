//! The `fleetsim` binary: parses the command line, starts the server, prints
//! `fleetsim listening on 127.0.0.1:PORT` and runs until SIGINT/SIGTERM.

use std::collections::BTreeMap;
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

/// The command line as given, before the fleet file is read.
struct Flags {
    fleet_path: Option<PathBuf>,
    port: u16,
    moto: Option<String>,
    lambda: Option<String>,
    speed: Option<f64>,
    visibility: Option<u64>,
    pending: Option<u64>,
    faults: Vec<FaultRule>,
    iam_url: Option<String>,
    lambda_timeouts: BTreeMap<String, f64>,
}

fn parse() -> Result<(PathBuf, Options), String> {
    let flags = read_flags(std::env::args().skip(1))?;

    let path = flags
        .fleet_path
        .ok_or_else(|| format!("--fleet is required\n{USAGE}"))?;
    let fleet = Fleet::load(&path).map_err(|e| e.to_string())?;

    let mut opts = Options::new(fleet);
    opts.port = flags.port;
    opts.moto_url = flags.moto;
    opts.lambda_url = flags.lambda;
    opts.speed = flags.speed;
    opts.invocation_visibility_ms = flags.visibility;
    opts.pending_seconds = flags.pending;
    opts.faults = flags.faults;
    opts.iam_url = flags.iam_url;
    opts.lambda_timeouts = flags.lambda_timeouts;
    Ok((path, opts))
}

fn read_flags(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
    let mut f = Flags {
        fleet_path: None,
        port: 4566,
        moto: None,
        lambda: None,
        speed: None,
        visibility: None,
        pending: None,
        faults: Vec::new(),
        iam_url: None,
        lambda_timeouts: BTreeMap::new(),
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--fleet" => f.fleet_path = Some(PathBuf::from(value("--fleet")?)),
            "--port" => {
                f.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--moto-url" => f.moto = Some(value("--moto-url")?),
            "--lambda-url" => f.lambda = Some(value("--lambda-url")?),
            "--speed" => {
                f.speed = Some(
                    value("--speed")?
                        .parse()
                        .map_err(|e| format!("--speed: {e}"))?,
                )
            }
            "--invocation-visibility-ms" => {
                f.visibility = Some(value(&a)?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--pending-seconds" => {
                f.pending = Some(value(&a)?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--fault" => {
                let rule: FaultRule = serde_json::from_str(&value("--fault")?)
                    .map_err(|e| format!("--fault: {e}"))?;
                f.faults.push(rule);
            }
            "--iam-url" => f.iam_url = Some(value("--iam-url")?),
            "--lambda-timeout" => {
                let (name, secs) = lambda_timeout(&value("--lambda-timeout")?)?;
                f.lambda_timeouts.insert(name, secs);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(f)
}

/// `NAME=SECONDS`.
fn lambda_timeout(v: &str) -> Result<(String, f64), String> {
    let (name, secs) = v
        .split_once('=')
        .ok_or_else(|| format!("--lambda-timeout: expected NAME=SECONDS, got {v}"))?;
    let secs: f64 = secs
        .parse()
        .map_err(|e| format!("--lambda-timeout {name}: {e}"))?;
    Ok((name.to_string(), secs))
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
