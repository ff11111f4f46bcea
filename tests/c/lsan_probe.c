/* Leaks on purpose: the Makefile runs it to find out whether LeakSanitizer
 * works in this environment (it does not under some ptrace-restricted
 * sandboxes), so that leak checking is never skipped silently. */
#include <stdio.h>
#include <stdlib.h>

void *volatile leaked;

int main(void)
{
    leaked = malloc(4242);
    leaked = NULL;
    puts("leaking 4242 bytes");
    return 0;
}
