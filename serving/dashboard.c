#include "dashboard.h"

const char serve_dashboard_html[] = "<!doctype html><title>lambda-stack</title>";
const size_t serve_dashboard_len = sizeof(serve_dashboard_html) - 1;
