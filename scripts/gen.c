/* lambda-gen - a synthetic order producer. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "lambda-gen: not built yet\n");
    return 2;
}
