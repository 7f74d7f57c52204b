/* core_link.c: a program that links every file of src/core (meson: link_whole) and nothing
 * else but the core's own dependencies (BLAS, OpenMP, cJSON, threads, libm), not SQLite:
 * if a core file called the database, this would fail to link and the build with it. */

/* Nothing to run: building this program is the check. */
int main(void) {
    return 0;
}
