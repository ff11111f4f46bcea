#include "net.hpp"

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace kv {

namespace {

[[noreturn]] void refuse(const std::string &url, const std::string &why) {
    throw std::runtime_error("--listen " + url + ": " + why);
}

struct addrinfo_deleter {
    void operator()(addrinfo *ai) const noexcept { freeaddrinfo(ai); }
};

} // namespace

handoff::unique_fd bind_listener(const std::string &url) {
    const std::string prefix = "tcp://";
    if (url.compare(0, prefix.size(), prefix) != 0)
        refuse(url, "expected tcp://HOST:PORT");
    std::string rest = url.substr(prefix.size());
    std::string host, port;
    if (!rest.empty() && rest[0] == '[') {
        auto close = rest.find(']');
        if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            refuse(url, "bad IPv6 address");
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string::npos)
            refuse(url, "expected tcp://HOST:PORT");
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo *found = nullptr;
    int gai = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
    if (gai != 0)
        refuse(url, gai_strerror(gai));
    std::unique_ptr<addrinfo, addrinfo_deleter> owned(found);
    std::string last_error = "no address";
    for (addrinfo *ai = found; ai; ai = ai->ai_next) {
        handoff::unique_fd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            last_error = std::strerror(errno);
            continue;
        }
        int one = 1;
        setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd.get(), SOMAXCONN) == 0)
            return fd;
        last_error = std::strerror(errno);
    }
    refuse(url, last_error);
}

std::string listener_url(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    bool v6 = false;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
        if (ss.ss_family == AF_INET) {
            auto *in = reinterpret_cast<sockaddr_in *>(&ss);
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
            v6 = true;
        }
    }
    return "tcp://" + (v6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::to_string(port);
}

} // namespace kv
