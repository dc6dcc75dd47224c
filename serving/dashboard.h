/* dashboard.h - the dashboard page served at GET /: one self-contained HTML document (inline
 * CSS, an inline SVG chart, vanilla JavaScript; nothing fetched from elsewhere) that polls
 * /top, /query/<id>/series and /health. */
#ifndef LAMBDA_SERVE_DASHBOARD_H
#define LAMBDA_SERVE_DASHBOARD_H

#include <stddef.h>

extern const char serve_dashboard_html[];
extern const size_t serve_dashboard_len;

#endif
