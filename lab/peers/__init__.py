"""Third-party implementations under test and interop peers (Caddy, ngtcp2, nghttp2)."""
