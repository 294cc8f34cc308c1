//! Embedded service DNS served at 127.0.0.11 inside every task namespace, fed by the endpoint table.
