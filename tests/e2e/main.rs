//! End-to-end tests: they drive the real `chatspace` and `chatspace-encoder` binaries and read
//! the output back with pyarrow and DuckDB (through `tests/support/check_output.py`).

mod bad_input;
mod embed;
mod extract;
mod fakehub;
mod fidelity;
mod hub;
mod options;
mod protocol;
mod reliability;
mod resume;
mod slurm;
mod startup;
mod tasks;
