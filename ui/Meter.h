/* Meter: a progress bar in htop's style, "[||||||||      42.0%]". */
#ifndef TOKENREC_UI_METER_H
#define TOKENREC_UI_METER_H
/* Draw at (y, x) in w columns (at least 8); attr colours the filled part. */
void Meter_draw(int y, int x, int w, double progress, int attr);
#endif
