//! The checksum of kv.log's records and the table's hash, shared by kv-rust
//! and the benchmark's Rust service (benches/services/kv_common.rs), as
//! kv-c has them (examples/c/kvlog.c, kvmap.c): a successor replays every
//! record of the log, so both are on its path to Ready.
#![allow(unsafe_code)]

use std::hash::Hasher;

/// CRC-32C (Castagnoli), as kv.log's records carry it: with the SSE4.2
/// instruction when the CPU has one (as kv-c, and Go's hash/crc32), else
/// with a table.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return !unsafe { crc32c_sse42(!0, data) };
    }
    !crc32c_table(!0, data)
}

/// Reflected polynomial 0x82F63B78, one byte at a time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

fn crc32c_table(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// Eight bytes per instruction, then the rest one by one (kv-c's loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut c = u64::from(crc);
    for word in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(word.try_into().unwrap()));
    }
    let mut crc = c as u32;
    for &byte in words.remainder() {
        crc = _mm_crc32_u8(crc, byte);
    }
    crc
}

/// The table's hash, kv-c's (examples/c/kvmap.c): FNV-1a, 64-bit, with a
/// final mix so that the low bits depend on every byte. Keys come from
/// clients, but the table is an example's: std's SipHash (made for tables
/// an attacker fills) and a CRC a byte at a time made kv-rust's replay of
/// 100,000 records take 8.1 ms instead of 3.9.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instruction_and_the_table_agree() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 999, 1000] {
            assert_eq!(
                !crc32c_table(!0, &data[..len]),
                crc32c(&data[..len]),
                "{len}"
            );
        }
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
