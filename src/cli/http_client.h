// The CLI's HTTP client is the node's (src/http/client.h): the node uses it for HTTP actions.
#pragma once

#include "http/client.h"
