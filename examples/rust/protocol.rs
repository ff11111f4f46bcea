//! The line protocol (examples/README.md, "Protocol"): a request line
//! parsed into a command, or the reason it is refused.

use crate::log::valid_item;

/// A request line is at most this many bytes before its `\n`.
pub const MAX_LINE: usize = 1024;
pub const LINE_TOO_LONG: &str = "ERR line too long (at most 1024 bytes)";

#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Ping,
    Get(&'a [u8]),
    Set(&'a [u8], &'a [u8]),
}

/// Parse one line (without its `\n`; a trailing `\r` is dropped). Err is
/// the whole `ERR ...` answer.
pub fn parse(line: &[u8]) -> Result<Command<'_>, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err("ERR empty line");
    }
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let want = match fields[0] {
        b"PING" => 1,
        b"GET" => 2,
        b"SET" => 3,
        _ => return Err("ERR unknown command"),
    };
    if fields.iter().any(|f| f.is_empty()) {
        return Err("ERR fields are separated by exactly one space");
    }
    if fields.len() != want {
        return Err("ERR wrong number of arguments");
    }
    if want >= 2 && !valid_item(fields[1]) {
        return Err("ERR invalid key (1 to 256 printable ASCII bytes, no spaces)");
    }
    if want == 3 && !valid_item(fields[2]) {
        return Err("ERR invalid value (1 to 256 printable ASCII bytes, no spaces)");
    }
    Ok(match want {
        1 => Command::Ping,
        2 => Command::Get(fields[1]),
        _ => Command::Set(fields[1], fields[2]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed() {
        assert_eq!(parse(b"PING"), Ok(Command::Ping));
        assert_eq!(parse(b"PING\r"), Ok(Command::Ping));
        assert_eq!(parse(b"GET a"), Ok(Command::Get(b"a")));
        assert_eq!(parse(b"SET a 1"), Ok(Command::Set(b"a", b"1")));
    }

    #[test]
    fn bad_lines_get_kv_c_s_reasons() {
        assert_eq!(parse(b""), Err("ERR empty line"));
        assert_eq!(parse(b"\r"), Err("ERR empty line"));
        assert_eq!(parse(b"DEL a"), Err("ERR unknown command"));
        assert_eq!(
            parse(b"SET a  1"),
            Err("ERR fields are separated by exactly one space")
        );
        assert_eq!(
            parse(b"GET a "),
            Err("ERR fields are separated by exactly one space")
        );
        assert_eq!(parse(b"GET"), Err("ERR wrong number of arguments"));
        assert_eq!(parse(b"PING x"), Err("ERR wrong number of arguments"));
        assert!(parse(b"GET \x01")
            .unwrap_err()
            .starts_with("ERR invalid key"));
        let long = vec![b'v'; 257];
        let mut line = b"SET k ".to_vec();
        line.extend_from_slice(&long);
        assert!(parse(&line).unwrap_err().starts_with("ERR invalid value"));
    }
}
