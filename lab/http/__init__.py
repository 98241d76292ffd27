"""HTTP/2 and HTTP/3 on trio: certificates, the reference server and the clients."""
