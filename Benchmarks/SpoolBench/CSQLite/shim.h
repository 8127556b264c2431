#include <sqlite3.h>
/* mallinfo2, for SpoolBench's memory-per-recipient figure (glibc has no Swift overlay for it). */
#include <malloc.h>
