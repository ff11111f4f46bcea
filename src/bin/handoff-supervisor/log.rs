//! The supervisor's log: one line per event on stderr, human-readable by
//! default, one JSON object per line with `--log-format json`. Under
//! systemd (JOURNAL_STREAM set) human lines carry a `<N>` priority prefix
//! instead of a timestamp, which journald turns into the entry's priority.
//! The library's own events are routed here too.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub use handoff::log::Level;

/// Human lines or JSON objects (`--log-format`).
pub use crate::cli::LogFormat as Format;

struct Logger {
    format: Format,
    max_level: Level,
    journald: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Structured fields of a line, printed after the message (human) or as
/// keys of the object (JSON).
pub type Fields<'a> = &'a [(&'a str, Field<'a>)];

#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Str(&'a str),
    U64(u64),
    Ms(f64),
}

/// Set up the log (once, first thing in `run`); library events follow.
pub fn init(format: Format, max_level: Level) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = LOGGER.set(Logger {
        format,
        max_level,
        journald,
    });
    // The library's info events repeat the per-phase lines: debug here.
    handoff::log::set_logger(Some(Box::new(|level, message| {
        let level = if level == Level::Info {
            Level::Debug
        } else {
            level
        };
        line(level, message, &[])
    })));
}

pub fn line(level: Level, message: &str, fields: Fields<'_>) {
    let logger = LOGGER.get_or_init(|| Logger {
        format: Format::Human,
        max_level: Level::Info,
        journald: false,
    });
    if level > logger.max_level {
        return;
    }
    let text = match logger.format {
        Format::Human => human(logger.journald, level, message, fields),
        Format::Json => json(level, message, fields),
    };
    // One write per line, so lines from several threads never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn human(journald: bool, level: Level, message: &str, fields: Fields<'_>) -> String {
    let mut text = if journald {
        // sd-daemon(3) priorities: err 3, warning 4, info 6, debug 7.
        let priority = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        };
        format!("<{priority}>{message}")
    } else {
        format!(
            "{} handoff-supervisor[{}] {}: {message}",
            rfc3339(SystemTime::now()),
            std::process::id(),
            level.name()
        )
    };
    for (key, value) in fields {
        match value {
            Field::Str(s) if s.contains(' ') || s.is_empty() => {
                text.push_str(&format!(" {key}={s:?}"))
            }
            Field::Str(s) => text.push_str(&format!(" {key}={s}")),
            Field::U64(n) => text.push_str(&format!(" {key}={n}")),
            Field::Ms(ms) => text.push_str(&format!(" {key}={ms:.3}")),
        }
    }
    text.push('\n');
    text
}

fn json(level: Level, message: &str, fields: Fields<'_>) -> String {
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), rfc3339(SystemTime::now()).into());
    object.insert("level".into(), level.name().into());
    object.insert("pid".into(), std::process::id().into());
    object.insert("msg".into(), message.into());
    for (key, value) in fields {
        let value = match *value {
            Field::Str(s) => serde_json::Value::from(s),
            Field::U64(n) => serde_json::Value::from(n),
            Field::Ms(ms) => serde_json::Value::from((ms * 1000.0).round() / 1000.0),
        };
        object.insert((*key).into(), value);
    }
    let mut text = serde_json::Value::Object(object).to_string();
    text.push('\n');
    text
}

/// `2024-05-01T12:34:56.789Z` (UTC, milliseconds).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

macro_rules! log {
    ($level:ident, $fields:expr, $($arg:tt)*) => {
        $crate::log::line($crate::log::Level::$level, &format!($($arg)*), $fields)
    };
}
pub(crate) use log;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_123);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123Z");
    }

    #[test]
    fn json_lines_escape() {
        let line = json(Level::Info, "a \"b\"\n", &[("phase", Field::Str("drain"))]);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["msg"], "a \"b\"\n");
        assert_eq!(value["phase"], "drain");
    }
}
