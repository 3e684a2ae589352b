//! Command-line options of `loupe-local`, parsed by hand from `argv`.
//!
//! In: the arguments after the program name. Out: an [`Options`] value or an [`ArgsError`] that
//! names the bad switch. Pure: files named by options are read later, in `run`.

use std::path::PathBuf;
use std::time::Duration;

/// The usage text printed by `--help` and after an argument error.
pub const USAGE: &str = "\
usage: loupe-local [OPTIONS] -- RUNTIME_COMMAND [ARGS...]

Runs RUNTIME_COMMAND as a Lambda runtime and every executable in --extensions-dir as an
extension, serving the Runtime, Extensions, Telemetry and Logs APIs on 127.0.0.1.

  --extensions-dir DIR        start every executable file in DIR as an extension (default: none)
  --invocations N             number of invocations (default 1, or one per line of --payloads)
  --payload JSON              the payload of every invocation (default {})
  --payloads FILE             one JSON payload per line, used in turn
  --timeout SECONDS           function timeout (default 3)
  --init-timeout SECONDS      init budget (default 10; 130 with --managed-instances)
  --memory MB                 memory size (default 128)
  --function-name NAME        function name (default loupe-local-function)
  --handler NAME              _HANDLER (default app.handler)
  --task-root DIR             LAMBDA_TASK_ROOT and the runtime's working directory (default .)
  --region REGION             AWS_REGION (default us-east-1)
  --log-format text|json      AWS_LAMBDA_LOG_FORMAT (default text)
  --env K=V                   extra environment variable for the runtime and extensions
  --telemetry-api on|off|202  off: 400 ValidationError; 202: Telemetry.NotSupported (default on)
  --telemetry-schemas LIST    accepted schema versions (default 2022-07-01,2022-12-13,2025-01-29)
  --logs-api on|off           off: 202 Logs.NotSupported (default on)
  --managed-instances         behave like Lambda Managed Instances
  --no-freeze                 do not SIGSTOP processes between invocations
  --report FILE               write a JSON report of the run
  --port PORT                 API port on 127.0.0.1 (default 0: any free port)
  --receiver                  serve OTLP/HTTP on 127.0.0.1 and summarise what arrives; sets
                              LOUPE_BACKEND_URL for the sandbox unless it is already set
  --receiver-port PORT        the receiver's port (default 0: any free port)
  --threshold LIST            report the share of histogram values above each of these
                              (comma separated, in the metric's unit; default 5,10,100)
  --quiet                     do not echo function and extension output to stderr
  -h, --help                  this text
";

/// How an optional platform API answers subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiSwitch {
    /// Subscriptions are accepted and records delivered.
    On,
    /// Refused the way Lambda refuses: 400 ValidationError (Telemetry).
    Off,
    /// Refused the way AWS's emulator does: 202 with a `*.NotSupported` error body.
    NotSupported,
}

/// How the function's log lines are formatted (`AWS_LAMBDA_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where invocation payloads come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadSource {
    Fixed(String),
    File(PathBuf),
}

/// Everything `loupe-local` was asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub runtime_command: Vec<String>,
    pub extensions_dir: Option<PathBuf>,
    /// `None`: 1, or one per payload line when `--payloads` is given.
    pub invocations: Option<u32>,
    pub payloads: PayloadSource,
    pub timeout: Duration,
    /// `None`: Lambda's budget (10 s, 130 s on Managed Instances).
    pub init_timeout: Option<Duration>,
    pub memory_mb: u32,
    pub function_name: String,
    pub handler: String,
    pub task_root: PathBuf,
    pub region: String,
    pub log_format: LogFormat,
    pub env: Vec<(String, String)>,
    pub telemetry_api: ApiSwitch,
    pub telemetry_schemas: Vec<String>,
    pub logs_api: ApiSwitch,
    pub managed_instances: bool,
    pub freeze: bool,
    pub report: Option<PathBuf>,
    pub port: u16,
    pub quiet: bool,
    /// Serve an OTLP/HTTP receiver.
    pub receiver: bool,
    pub receiver_port: u16,
    pub thresholds: Vec<f64>,
}

/// Telemetry API schema versions Lambda accepts.
pub const TELEMETRY_SCHEMAS: [&str; 3] = ["2022-07-01", "2022-12-13", "2025-01-29"];

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime_command: Vec::new(),
            extensions_dir: None,
            invocations: None,
            payloads: PayloadSource::Fixed("{}".to_string()),
            timeout: Duration::from_secs(3),
            init_timeout: None,
            memory_mb: 128,
            function_name: "loupe-local-function".to_string(),
            handler: "app.handler".to_string(),
            task_root: PathBuf::from("."),
            region: "us-east-1".to_string(),
            log_format: LogFormat::Text,
            env: Vec::new(),
            telemetry_api: ApiSwitch::On,
            telemetry_schemas: TELEMETRY_SCHEMAS.iter().map(|s| s.to_string()).collect(),
            logs_api: ApiSwitch::On,
            managed_instances: false,
            freeze: true,
            report: None,
            port: 0,
            quiet: false,
            receiver: false,
            receiver_port: 0,
            thresholds: vec![5.0, 10.0, 100.0],
        }
    }
}

/// A command line that cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("help requested")]
    Help,
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{switch}: {value:?} is not valid ({expected})")]
    BadValue {
        switch: String,
        value: String,
        expected: &'static str,
    },
    #[error("unknown option {0}")]
    Unknown(String),
    #[error("no runtime command: put it after --")]
    NoRuntime,
}

fn bad(switch: &str, value: &str, expected: &'static str) -> ArgsError {
    ArgsError::BadValue {
        switch: switch.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn number<T: std::str::FromStr>(switch: &str, value: &str) -> Result<T, ArgsError> {
    value
        .parse()
        .map_err(|_| bad(switch, value, "a whole number"))
}

/// Parses the arguments that follow the program name.
pub fn parse(args: &[String]) -> Result<Options, ArgsError> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            o.runtime_command = args[i + 1..].to_vec();
            break;
        }
        // Switches without a value.
        match arg {
            "-h" | "--help" => return Err(ArgsError::Help),
            "--managed-instances" => {
                o.managed_instances = true;
                i += 1;
                continue;
            }
            "--no-freeze" => {
                o.freeze = false;
                i += 1;
                continue;
            }
            "--quiet" => {
                o.quiet = true;
                i += 1;
                continue;
            }
            "--receiver" => {
                o.receiver = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        if !name.starts_with("--") {
            return Err(ArgsError::Unknown(arg.to_string()));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| ArgsError::MissingValue(name.to_string()))?
            }
        };
        let v = value.as_str();
        match name {
            "--extensions-dir" => o.extensions_dir = Some(PathBuf::from(v)),
            "--invocations" => o.invocations = Some(number(name, v)?),
            "--payload" => {
                if serde_json::from_str::<serde_json::Value>(v).is_err() {
                    return Err(bad(name, v, "a JSON document"));
                }
                o.payloads = PayloadSource::Fixed(value);
            }
            "--payloads" => o.payloads = PayloadSource::File(PathBuf::from(v)),
            "--timeout" => {
                let secs: f64 = v.parse().map_err(|_| bad(name, v, "seconds"))?;
                if !(secs > 0.0 && secs <= 900.0) {
                    return Err(bad(name, v, "seconds between 0 and 900"));
                }
                o.timeout = Duration::from_secs_f64(secs);
            }
            "--init-timeout" => {
                let secs: f64 = v.parse().map_err(|_| bad(name, v, "seconds"))?;
                if !(secs > 0.0 && secs <= 900.0) {
                    return Err(bad(name, v, "seconds between 0 and 900"));
                }
                o.init_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--memory" => {
                let mb: u32 = number(name, v)?;
                if !(128..=10_240).contains(&mb) {
                    return Err(bad(name, v, "128 to 10240 MB"));
                }
                o.memory_mb = mb;
            }
            "--function-name" if !v.is_empty() => o.function_name = value,
            "--handler" => o.handler = value,
            "--task-root" => o.task_root = PathBuf::from(v),
            "--region" if !v.is_empty() => o.region = value,
            "--log-format" => {
                o.log_format = match v.to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad(name, v, "text or json")),
                }
            }
            "--env" => match v.split_once('=') {
                Some((k, val)) if !k.is_empty() => o.env.push((k.to_string(), val.to_string())),
                _ => return Err(bad(name, v, "K=V")),
            },
            "--telemetry-api" => o.telemetry_api = switch(name, v)?,
            "--logs-api" => o.logs_api = switch(name, v)?,
            "--telemetry-schemas" => {
                let list: Vec<String> = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if list
                    .iter()
                    .any(|s| !TELEMETRY_SCHEMAS.contains(&s.as_str()))
                {
                    return Err(bad(
                        name,
                        v,
                        "2022-07-01, 2022-12-13 or 2025-01-29, comma separated",
                    ));
                }
                o.telemetry_schemas = list;
            }
            "--report" => o.report = Some(PathBuf::from(v)),
            "--port" => o.port = number(name, v)?,
            "--receiver-port" => {
                o.receiver_port = number(name, v)?;
                o.receiver = true;
            }
            "--threshold" => {
                let list: Result<Vec<f64>, _> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::parse::<f64>)
                    .collect();
                match list {
                    Ok(l) if l.iter().all(|t| t.is_finite()) => o.thresholds = l,
                    _ => return Err(bad(name, v, "numbers, comma separated")),
                }
            }
            "--function-name" | "--region" => return Err(bad(name, v, "a non-empty name")),
            _ => return Err(ArgsError::Unknown(name.to_string())),
        }
        i += 1;
    }
    if o.runtime_command.is_empty() {
        return Err(ArgsError::NoRuntime);
    }
    Ok(o)
}

fn switch(name: &str, v: &str) -> Result<ApiSwitch, ArgsError> {
    match v {
        "on" => Ok(ApiSwitch::On),
        "off" => Ok(ApiSwitch::Off),
        "202" => Ok(ApiSwitch::NotSupported),
        _ => Err(bad(name, v, "on, off or 202")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_and_runtime_command() {
        let o = parse(&args(&[
            "--",
            "python",
            "-m",
            "awslambdaric",
            "app.handler",
        ]))
        .unwrap();
        assert_eq!(
            o.runtime_command,
            args(&["python", "-m", "awslambdaric", "app.handler"])
        );
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.memory_mb, 128);
        assert!(o.freeze);
        assert_eq!(o.telemetry_schemas.len(), 3);
    }

    #[test]
    fn every_switch() {
        let o = parse(&args(&[
            "--extensions-dir",
            "ext",
            "--invocations=4",
            "--payload",
            "{\"a\":1}",
            "--timeout",
            "0.5",
            "--init-timeout",
            "2",
            "--memory",
            "256",
            "--function-name",
            "f",
            "--log-format",
            "JSON",
            "--env",
            "A=b=c",
            "--telemetry-api",
            "202",
            "--logs-api",
            "off",
            "--telemetry-schemas",
            "2022-12-13",
            "--managed-instances",
            "--no-freeze",
            "--report",
            "r.json",
            "--port",
            "9001",
            "--quiet",
            "--",
            "rt",
        ]))
        .unwrap();
        assert_eq!(o.extensions_dir, Some(PathBuf::from("ext")));
        assert_eq!(o.invocations, Some(4));
        assert_eq!(o.payloads, PayloadSource::Fixed("{\"a\":1}".into()));
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert_eq!(o.init_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.memory_mb, 256);
        assert_eq!(o.log_format, LogFormat::Json);
        assert_eq!(o.env, vec![("A".to_string(), "b=c".to_string())]);
        assert_eq!(o.telemetry_api, ApiSwitch::NotSupported);
        assert_eq!(o.logs_api, ApiSwitch::Off);
        assert_eq!(o.telemetry_schemas, vec!["2022-12-13".to_string()]);
        assert!(o.managed_instances && !o.freeze && o.quiet);
        assert_eq!(o.port, 9001);
        assert!(!o.receiver);
        assert_eq!(o.thresholds, vec![5.0, 10.0, 100.0]);
    }

    #[test]
    fn receiver_switches() {
        let o = parse(&args(&["--receiver", "--threshold", "1, 2.5", "--", "rt"])).unwrap();
        assert!(o.receiver);
        assert_eq!((o.receiver_port, o.thresholds), (0, vec![1.0, 2.5]));
        let o = parse(&args(&["--receiver-port", "4318", "--", "rt"])).unwrap();
        assert!(o.receiver && o.receiver_port == 4318);
        for bad in ["x", "1,inf", "5,,y"] {
            assert!(
                matches!(
                    parse(&args(&["--threshold", bad, "--", "rt"])),
                    Err(ArgsError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_the_switch() {
        assert_eq!(
            parse(&args(&["--invocations"])),
            Err(ArgsError::MissingValue("--invocations".into()))
        );
        assert!(matches!(
            parse(&args(&["--timeout", "x", "--", "rt"])),
            Err(ArgsError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&args(&["--payload", "{", "--", "rt"])),
            Err(ArgsError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&args(&["--telemetry-schemas", "2020-01-01", "--", "rt"])),
            Err(ArgsError::BadValue { .. })
        ));
        assert_eq!(
            parse(&args(&["--bogus", "1", "--", "rt"])),
            Err(ArgsError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse(&args(&["--memory", "256"])),
            Err(ArgsError::NoRuntime)
        );
        assert_eq!(parse(&args(&["-h"])), Err(ArgsError::Help));
    }
}
