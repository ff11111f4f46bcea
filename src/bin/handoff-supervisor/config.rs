//! The configuration file (TOML): read, checked and resolved before
//! anything starts, so that every mistake is reported naming its key or path.
//!
//! Relative paths are taken from the directory of the configuration file;
//! `args` are passed to the service unchanged.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    service: RawService,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    binary: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    control_socket: PathBuf,
    trigger_socket: PathBuf,
    journal: PathBuf,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    deadline_secs: f64,
    /// Unset: `default_drain_grace` of the deadline.
    drain_grace_secs: Option<f64>,
    hello_secs: f64,
    liveness_secs: f64,
    kill_grace_secs: f64,
    stop_grace_secs: f64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            deadline_secs: 60.0,
            drain_grace_secs: None,
            hello_secs: 5.0,
            liveness_secs: 10.0,
            kill_grace_secs: 2.0,
            stop_grace_secs: 10.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRestart {
    policy: String,
    initial_backoff_ms: u64,
    max_backoff_secs: f64,
    reset_after_secs: f64,
    probation_secs: f64,
}

impl Default for RawRestart {
    fn default() -> Self {
        RawRestart {
            policy: "always".into(),
            initial_backoff_ms: 100,
            max_backoff_secs: 30.0,
            reset_after_secs: 10.0,
            // Long enough to catch a build that dies on its first requests
            // or timers after Ready; short enough that a later crash is an
            // ordinary one, not a reason to bring back a replaced build.
            probation_secs: 10.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: String,
}

/// Where a listener (or the metrics endpoint) is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    /// A Linux abstract socket (`unix:@name`).
    UnixAbstract(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    /// As written in the file, for messages.
    pub text: String,
    pub address: Address,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub control_socket: PathBuf,
    pub trigger_socket: PathBuf,
    pub journal: PathBuf,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub deadline: Duration,
    pub drain_grace: Duration,
    pub hello: Duration,
    pub liveness: Duration,
    /// SIGTERM to SIGKILL for a process that must go.
    pub kill_grace: Duration,
    /// How long the incumbent has to exit when the supervisor stops.
    pub stop_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whenever the incumbent exits outside a handoff.
    Always,
    /// Restart unless it exited with status 0.
    OnFailure,
    /// Stop the supervisor (exit 1), leaving restarts to whoever runs it.
    Never,
}

#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub policy: RestartPolicy,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// An incumbent that ran this long resets the backoff.
    pub reset_after: Duration,
    /// A generation that dies this soon after it began serving is replaced
    /// by the last build that served well (if another one is known).
    pub probation: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub service: Service,
    pub listeners: Vec<Listener>,
    pub timeouts: Timeouts,
    pub restart: Restart,
    pub metrics: Option<Address>,
}

/// A configuration mistake; the message names the file and the key or path.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Read and check `path`. Nothing is created or started.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).map_err(|e| {
            ConfigError(format!(
                "cannot resolve the directory of {}: {e}",
                path.display()
            ))
        })?;
        Resolver {
            file: path,
            base: &base,
        }
        .resolve(raw)
    }
}

struct Resolver<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    fn error(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {key}: {message}", self.file.display()))
    }

    fn path(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let service = self.service(raw.service)?;
        let mut listeners = Vec::new();
        let mut names = HashSet::new();
        for (i, listener) in raw.listener.into_iter().enumerate() {
            let key = format!("[[listener]] #{} ({:?})", i + 1, listener.name);
            check_listener_name(&listener.name).map_err(|e| self.error(&key, e))?;
            if !names.insert(listener.name.clone()) {
                return Err(self.error(&key, "a listener of this name is already defined"));
            }
            let address = self
                .address(&listener.address, true)
                .map_err(|e| self.error(&format!("{key} address"), e))?;
            listeners.push(Listener {
                name: listener.name,
                text: listener.address,
                address,
            });
        }
        let timeouts = self.timeouts(&raw.timeouts)?;
        let restart = self.restart(&raw.restart)?;
        let metrics = match raw.metrics {
            None => None,
            Some(m) => match self.address(&m.address, false) {
                Ok(address @ Address::Tcp(_)) => Some(address),
                Ok(_) => {
                    return Err(self.error(
                        "[metrics] address",
                        format!(
                            "{:?}: the metrics endpoint is HTTP: use tcp://HOST:PORT",
                            m.address
                        ),
                    ))
                }
                Err(e) => return Err(self.error("[metrics] address", e)),
            },
        };
        Ok(Config {
            path: self.file.to_owned(),
            service,
            listeners,
            timeouts,
            restart,
            metrics,
        })
    }

    fn service(&self, raw: RawService) -> Result<Service, ConfigError> {
        let binary = self
            .binary(&raw.binary)
            .map_err(|e| self.error("[service] binary", e))?;
        let mut env = Vec::new();
        for (key, value) in raw.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(self.error(
                    &format!("[service] env.{key}"),
                    "a variable name must be non-empty without '=' or NUL, a value without NUL",
                ));
            }
            env.push((key.into(), value.into()));
        }
        for (i, arg) in raw.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(self.error(&format!("[service] args[{i}]"), "contains a NUL byte"));
            }
        }
        let control_socket = self.path(&raw.control_socket);
        let trigger_socket = self.path(&raw.trigger_socket);
        for (key, path) in [
            ("[service] control_socket", &control_socket),
            ("[service] trigger_socket", &trigger_socket),
        ] {
            // Both are bound by handoff::control::bind_private.
            handoff::control::check_path(path)
                .and_then(|()| check_socket_path(path))
                .map_err(|e| self.error(key, e))?;
        }
        if control_socket == trigger_socket {
            return Err(self.error(
                "[service] trigger_socket",
                "must differ from control_socket",
            ));
        }
        let journal = self.path(&raw.journal);
        if journal.file_name().is_none() || journal.is_dir() {
            return Err(self.error(
                "[service] journal",
                format!("{} must name a file", journal.display()),
            ));
        }
        let data_dir = raw.data_dir.map(|d| self.path(&d));
        if let Some(dir) = &data_dir {
            if dir.exists() && !dir.is_dir() {
                return Err(self.error(
                    "[service] data_dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        Ok(Service {
            binary,
            args: raw.args.into_iter().map(Into::into).collect(),
            env,
            control_socket,
            trigger_socket,
            journal,
            data_dir,
        })
    }

    /// An executable file: a path (relative to the config file) or a name
    /// looked up in PATH.
    fn binary(&self, binary: &str) -> Result<PathBuf, String> {
        if binary.is_empty() {
            return Err("is empty".into());
        }
        if !binary.contains('/') {
            let path = std::env::var_os("PATH").unwrap_or_default();
            return std::env::split_paths(&path)
                .map(|dir| dir.join(binary))
                .find(|candidate| check_executable(candidate).is_ok())
                .ok_or_else(|| format!("{binary:?} is not an executable file in PATH"));
        }
        let path = self.path(Path::new(binary));
        check_executable(&path)?;
        Ok(path)
    }

    /// `tcp://HOST:PORT`, `udp://HOST:PORT` or `unix:PATH` (`unix:@NAME`
    /// for an abstract socket).
    fn address(&self, text: &str, allow_unix: bool) -> Result<Address, String> {
        let bad = |why: &str| {
            format!("{text:?}: {why} (expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH)")
        };
        if let Some(rest) = text.strip_prefix("tcp://") {
            return host_port(rest).map(Address::Tcp).map_err(|e| bad(&e));
        }
        if let Some(rest) = text.strip_prefix("udp://") {
            return host_port(rest).map(Address::Udp).map_err(|e| bad(&e));
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            if !allow_unix {
                return Err(bad("a Unix socket is not allowed here"));
            }
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() || name.len() > 107 {
                    return Err(bad("an abstract name is 1 to 107 bytes"));
                }
                return Ok(Address::UnixAbstract(name.as_bytes().to_vec()));
            }
            if rest.is_empty() {
                return Err(bad("the path is empty"));
            }
            let path = self.path(Path::new(rest));
            check_socket_path(&path).map_err(|e| bad(&e))?;
            return Ok(Address::Unix(path));
        }
        Err(bad("unknown scheme"))
    }

    fn timeouts(&self, raw: &RawTimeouts) -> Result<Timeouts, ConfigError> {
        let secs = |key: &str, value: f64| {
            duration(value).map_err(|e| self.error(&format!("[timeouts] {key}"), e))
        };
        let deadline = secs("deadline_secs", raw.deadline_secs)?;
        let timeouts = Timeouts {
            deadline,
            drain_grace: match raw.drain_grace_secs {
                Some(value) => secs("drain_grace_secs", value)?,
                None => default_drain_grace(deadline),
            },
            hello: secs("hello_secs", raw.hello_secs)?,
            liveness: secs("liveness_secs", raw.liveness_secs)?,
            kill_grace: secs("kill_grace_secs", raw.kill_grace_secs)?,
            stop_grace: secs("stop_grace_secs", raw.stop_grace_secs)?,
        };
        if timeouts.drain_grace > timeouts.deadline {
            return Err(self.error(
                "[timeouts] drain_grace_secs",
                format!(
                    "{} is longer than deadline_secs ({}): the drain is part of the handoff",
                    timeouts.drain_grace.as_secs_f64(),
                    raw.deadline_secs
                ),
            ));
        }
        Ok(timeouts)
    }

    fn restart(&self, raw: &RawRestart) -> Result<Restart, ConfigError> {
        let policy = match raw.policy.as_str() {
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            "never" => RestartPolicy::Never,
            other => {
                return Err(self.error(
                    "[restart] policy",
                    format!("{other:?} is not one of \"always\", \"on-failure\", \"never\""),
                ))
            }
        };
        if raw.initial_backoff_ms == 0 {
            return Err(self.error("[restart] initial_backoff_ms", "must be at least 1"));
        }
        let initial_backoff = Duration::from_millis(raw.initial_backoff_ms);
        let max_backoff = duration(raw.max_backoff_secs)
            .map_err(|e| self.error("[restart] max_backoff_secs", e))?;
        if max_backoff < initial_backoff {
            return Err(self.error(
                "[restart] max_backoff_secs",
                "is shorter than initial_backoff_ms",
            ));
        }
        let reset_after = duration(raw.reset_after_secs)
            .map_err(|e| self.error("[restart] reset_after_secs", e))?;
        let probation =
            duration(raw.probation_secs).map_err(|e| self.error("[restart] probation_secs", e))?;
        Ok(Restart {
            policy,
            initial_backoff,
            max_backoff,
            reset_after,
            probation,
        })
    }
}

/// The drain budget when the file sets none: 25 s, but at most half the
/// deadline, so that a short deadline alone is valid and the drain leaves
/// time for the seal and the successor's Ready.
fn default_drain_grace(deadline: Duration) -> Duration {
    Duration::from_secs(25).min(deadline / 2)
}

/// A positive, finite number of seconds, at most a day.
fn duration(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{secs} is not a number of seconds in (0, 86400]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn host_port(text: &str) -> Result<SocketAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "missing :PORT".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number in 0..=65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains('/') {
        return Err("missing HOST".into());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn check_listener_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(
            "name must be 1 to 255 printable ASCII characters without ':' (LISTEN_FDNAMES)".into(),
        );
    }
    Ok(())
}

/// An existing, executable regular file (also for `trigger --binary`).
pub fn check_binary(path: &Path) -> Result<(), String> {
    check_executable(path)
}

fn check_executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not executable", path.display()));
    }
    Ok(())
}

/// A Unix socket path that fits `sun_path` and whose directory exists.
fn check_socket_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().len() > 107 {
        return Err(format!(
            "{} is longer than the 107 bytes a Unix socket path may have",
            path.display()
        ));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(format!(
            "the directory {} of {} does not exist",
            dir.display(),
            path.display()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "handoff-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        let result = Config::load(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    const MINIMAL: &str = r#"
[service]
binary = "/bin/sh"
control_socket = "/tmp/c.sock"
trigger_socket = "/tmp/t.sock"
journal = "/tmp/j/state.bin"
"#;

    #[test]
    fn defaults_apply() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.timeouts.deadline, Duration::from_secs(60));
        assert_eq!(config.timeouts.drain_grace, Duration::from_secs(25));
        let short = parse(&format!("{MINIMAL}\n[timeouts]\ndeadline_secs = 5\n")).unwrap();
        assert_eq!(short.timeouts.drain_grace, Duration::from_millis(2500));
        assert_eq!(config.restart.policy, RestartPolicy::Always);
        assert!(config.listeners.is_empty());
    }

    #[test]
    fn addresses() {
        let r = Resolver {
            file: Path::new("x.toml"),
            base: Path::new("/etc"),
        };
        assert_eq!(
            r.address("tcp://127.0.0.1:80", true).unwrap(),
            Address::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            r.address("udp://[::1]:53", true).unwrap(),
            Address::Udp("[::1]:53".parse().unwrap())
        );
        assert_eq!(
            r.address("unix:@kv", true).unwrap(),
            Address::UnixAbstract(b"kv".to_vec())
        );
        assert_eq!(
            r.address("unix:kv.sock", true).unwrap(),
            Address::Unix("/etc/kv.sock".into())
        );
        for bad in [
            "tcp://:80",
            "tcp://1.2.3.4",
            "tcp://1.2.3.4:x",
            "http://a:1",
            "unix:",
            "",
        ] {
            assert!(r.address(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MINIMAL}\n[timeouts]\ndeadline = 3\n")).unwrap_err();
        assert!(e.0.contains("deadline"), "{e}");
    }
}
