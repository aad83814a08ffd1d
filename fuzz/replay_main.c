/* Replays fuzz corpus files through a harness without libFuzzer, so every corpus runs as a
 * normal ctest test (also under ASan/UBSan). Usage: replay_X FILE|DIR... */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint8_t *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    if (!buf) {
        return 1;
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            files++;
            if (replay_file(argv[i])) {
                return 1;
            }
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') {
                continue;
            }
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            files++;
            if (replay_file(p)) {
                closedir(d);
                return 1;
            }
        }
        if (d) {
            closedir(d);
        }
    }
    printf("replayed %d inputs\n", files);
    return files ? 0 : 1;
}
