//! Integration tests: the real server over HTTP, every case on SQLite and PostgreSQL.
mod common;
mod connections;
mod crash;
mod data;
mod edge;
mod exactness;
mod gateway;
mod identity;
mod isolation;
mod jobs;
mod keys;
mod limits;
mod members;
mod metrics;
mod system;
mod tenants;
mod usage;
