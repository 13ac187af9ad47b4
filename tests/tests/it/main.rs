//! Integration tests against a real RabbitMQ broker (`$GUIRPC_TEST_URI`, or the local one).
//! Every test serves on a queue of its own, so they run in parallel.

mod calls;
mod casts;
mod clients;
mod errors;
mod events;
mod fuzz;
mod hostile;
mod jobs;
mod listener;
mod observability;
mod pages;
mod pipes;
mod plain_amqp;
mod quorum;
mod schemas;
mod serving;
mod streams;
mod v01;
