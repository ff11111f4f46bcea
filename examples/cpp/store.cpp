#include "store.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "say.hpp"

namespace kv {

namespace {

using clock = std::chrono::steady_clock;

long long ms_since(clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start).count();
}

} // namespace

bool valid_item(std::string_view item) { return kv_item_valid(item.data(), item.size()); }

store::store() noexcept {
    kvlog_init(&log_);
    kvmap_init(&map_);
}

store::~store() {
    if (is_open() && !close())
        say("closing the log: ", std::strerror(errno));
    kvlog_free(&log_);
    kvmap_free(&map_);
}

void store::preload(const std::string &data_dir) {
    char reason[512] = "";
    auto started = clock::now();
    int rc = kvlog_preload(&log_, data_dir.c_str(), &map_, reason, sizeof reason);
    if (rc < 0)
        throw std::runtime_error(std::string("preloading the log: ") + reason);
    if (rc > 0) {
        say("no preload (the whole log is replayed after the lock): ", reason);
        return;
    }
    say("preloaded ", log_.preload_records, " record(s) in ", ms_since(started), " ms");
}

void store::open(const std::string &data_dir, std::uint64_t generation) {
    char reason[512] = "";
    bool preloaded = log_.preloaded;
    std::uint64_t preload_records = log_.preload_records;
    if (!preloaded)
        kvmap_free(&map_);
    if (kvlog_open(&log_, data_dir.c_str(), &map_, reason, sizeof reason) != 0)
        throw std::runtime_error(reason);
    if (preloaded && log_.preload_kept == preload_records)
        say("kept ", preload_records, " preloaded record(s), replayed ", log_.records - preload_records,
            " appended since");
    else if (preloaded)
        say("the log changed under the preload: replayed all ", log_.records, " record(s)");
    if (log_.truncated > 0)
        say("truncated a torn tail of ", log_.truncated, " bytes from ", path());
    if (!kvlog_compaction_due(log_.records, map_.len))
        return;
    std::uint64_t before = log_.records;
    auto started = clock::now();
    int rc = kvlog_compact(&log_, &map_, generation, reason, sizeof reason);
    if (rc < 0)
        throw std::runtime_error(reason);
    if (rc > 0)
        say("compaction failed (the log is kept as it is): ", reason);
    else
        say("compacted the log: ", before, " record(s) -> ", log_.records, " in ", ms_since(started), " ms");
}

bool store::append(std::uint64_t generation, std::string_view key, std::string_view value) {
    int rc = kvlog_append(&log_, generation, key.data(), key.size(), value.data(), value.size());
    if (rc == -2)
        fatal("cannot cut a failed write out of ", path(), ": ", std::strerror(errno));
    if (rc != 0)
        return false;
    if (kvmap_put(&map_, key.data(), key.size(), value.data(), value.size()) != 0)
        fatal("out of memory");
    return true;
}

std::optional<std::string_view> store::get(std::string_view key) const {
    const kv_item *item = kvmap_get(&map_, key.data(), key.size());
    if (!item)
        return std::nullopt;
    return std::string_view(kv_item_value(item), item->value_len);
}

} // namespace kv
