#include "protocol.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include <unistd.h>

namespace kv {

std::string answer(std::string_view line, store &db, std::uint64_t generation) {
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    if (line.empty())
        return "ERR empty line";
    // Split on single spaces: exactly the command's number of fields, none
    // of them empty.
    std::array<std::string_view, 4> field;
    std::size_t fields = 0;
    bool empty_field = false;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= line.size(); i++) {
        if (i == line.size() || line[i] == ' ') {
            empty_field = empty_field || i == start;
            if (fields < field.size())
                field[fields] = line.substr(start, i - start);
            fields++;
            start = i + 1;
        }
    }
    const std::string_view command = field[0];
    std::size_t want = command == "PING" ? 1 : command == "GET" ? 2 : command == "SET" ? 3 : 0;
    if (want == 0)
        return "ERR unknown command";
    if (empty_field)
        return "ERR fields are separated by exactly one space";
    if (fields != want)
        return "ERR wrong number of arguments";
    if (want >= 2 && !valid_item(field[1]))
        return "ERR invalid key (1 to 256 printable ASCII bytes, no spaces)";
    if (want == 3 && !valid_item(field[2]))
        return "ERR invalid value (1 to 256 printable ASCII bytes, no spaces)";
    if (want == 1)
        return "PONG " + std::to_string(::getpid()) + " cpp";
    if (want == 2) {
        auto value = db.get(field[1]);
        return value ? "VALUE " + std::string(*value) : "NOTFOUND";
    }
    if (!db.append(generation, field[1], field[2]))
        return std::string("ERR write failed: ") + std::strerror(errno);
    return "OK " + std::to_string(generation);
}

std::string line_too_long() { return "ERR line too long (at most " + std::to_string(max_line) + " bytes)"; }

} // namespace kv
