/* t5.c */
#include "nn.h"
