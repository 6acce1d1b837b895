//! The sandbox init used by this crate's tests: the same thing the `wisp` binary does first
//! thing in `main()`.

fn main() {
    if std::env::args().nth(1).as_deref() == Some(wisp_sandbox::INIT_ARG) {
        wisp_sandbox::init_main();
    }
    eprintln!(
        "usage: started by wisp-sandbox as `wisp-sandbox-init {}`",
        wisp_sandbox::INIT_ARG
    );
    std::process::exit(2);
}
