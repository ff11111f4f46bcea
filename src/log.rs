//! The library's events, delivered to the host's logging. By default
//! warnings and errors go to stderr; `set_logger` routes every event.

use std::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

type Logger = Box<dyn Fn(Level, &str) + Send + Sync>;

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// Route every event to `logger` (None restores the stderr default). The
/// logger may be called from any of the library's threads.
pub fn set_logger(logger: Option<Logger>) {
    *LOGGER.write().unwrap_or_else(|p| p.into_inner()) = logger;
}

pub fn log(level: Level, message: &str) {
    match &*LOGGER.read().unwrap_or_else(|p| p.into_inner()) {
        Some(logger) => logger(level, message),
        None if level <= Level::Warn => {
            eprintln!(
                "handoff[{}] {}: {message}",
                std::process::id(),
                level.name()
            )
        }
        None => {}
    }
}

macro_rules! event {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::log($crate::log::Level::$level, &format!($($arg)*))
    };
}
pub(crate) use event;
