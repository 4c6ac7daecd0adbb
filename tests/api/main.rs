//! End-to-end tests of the HTTP API: one binary, one module per feature. Every test runs against
//! a real server on a real database (SQLite always, PostgreSQL when `BERTH_TEST_POSTGRES_URL` is set).

mod helpers;

mod bad_input;
mod bookings;
mod chat;
mod cli;
mod devices;
mod drivers;
mod handoffs;
mod health;
mod keys;
mod limits;
mod live;
mod mqtt;
mod nlu;
mod payments;
mod persistence;
mod plugins;
mod rules;
mod scale_out;
mod search;
mod sites;
mod spaces;
mod spec;
mod telegram;
mod tenancy;
mod whatsapp;
