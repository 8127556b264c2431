/* mallinfo2, for memory per recipient (glibc has no Swift overlay for it). */
#include <malloc.h>
