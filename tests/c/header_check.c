/*
 * handoff.h must compile on its own, twice in a row, as C99 and as C++
 * (the Makefile builds this file with gcc -std=c99/c11 and g++ -std=c++11/17,
 * -Wall -Wextra -Wpedantic -Werror), and link and run from either.
 */
#include <handoff.h>
#include <handoff.h> /* the include guard works */

/* handoff_status is 32 bits wide in both languages */
typedef char handoff_status_is_32_bits[sizeof(handoff_status) == 4 ? 1 : -1];
typedef char journal_phase_is_32_bits[sizeof(((handoff_journal *)0)->phase) == 4 ? 1 : -1];

int main(void)
{
    handoff_status st = HANDOFF_OK;
    handoff_error *err = 0;
    handoff_message *msg = 0;
    handoff_journal journal = {{0}, HANDOFF_PHASE_NEGOTIATING, 1, false, 0, 0};
    const char *version = handoff_version();

    st = handoff_message_new(HANDOFF_MSG_HEARTBEAT, &msg, &err);
    if (st != HANDOFF_OK || handoff_message_kind(msg) != HANDOFF_MSG_HEARTBEAT)
        return 1;
    handoff_message_free(msg);
    st = handoff_message_new(HANDOFF_MSG_INVALID, &msg, &err);
    if (st != HANDOFF_ERR_INVALID_ARGUMENT || handoff_error_status(err) != st)
        return 1;
    handoff_error_free(err);
    (void)journal;
    return version && version[0] ? 0 : 1;
}
