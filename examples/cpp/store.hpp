// The log and the table: kv-c's own C code (examples/c/kvlog.c, kvmap.c),
// which is the on-disk format, owned here by one C++ object.
#ifndef KV_CPP_STORE_HPP
#define KV_CPP_STORE_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

// kv.h is C99: its table item ends in a flexible array member, which ISO C++
// does not have (GCC and Clang accept it; the layout is the C one).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
extern "C" {
#include "kv.h"
}
#pragma GCC diagnostic pop

namespace kv {

/// A key or value as the protocol allows it (1 to 256 bytes, 0x21..0x7E).
bool valid_item(std::string_view item);

class store {
public:
    store() noexcept;
    ~store();
    store(const store &) = delete;
    store &operator=(const store &) = delete;

    /// A successor's read-only replay before the handshake (examples/README.md,
    /// Successor step 1). Throws for a record of another format; a log that
    /// cannot be read only logs why.
    void preload(const std::string &data_dir);
    /// Open (creating) and replay the log, going on from a preload, then
    /// compact it when due, stamping compacted records with `generation`.
    /// Throws std::runtime_error with the reason.
    void open(const std::string &data_dir, std::uint64_t generation);
    bool is_open() const noexcept { return log_.fd >= 0; }
    /// Append a SET (durable only after sync()). Returns false with errno set
    /// when nothing was written; exits when a partial write cannot be cut back.
    bool append(std::uint64_t generation, std::string_view key, std::string_view value);
    /// fdatasync when anything was appended since the last one.
    bool sync() noexcept { return kvlog_sync(&log_) == 0; }
    /// fsync and close (closed either way).
    bool close() noexcept { return kvlog_close(&log_) == 0; }

    std::optional<std::string_view> get(std::string_view key) const;
    std::uint64_t records() const noexcept { return log_.records; }
    std::string_view path() const noexcept { return log_.path ? log_.path : "kv.log"; }

private:
    kvlog log_;
    kvmap map_;
};

} // namespace kv

#endif
