# Wisp's Python runtime entry point: `python3 -S bootstrap.py`. Kept tiny because a script is
# compiled on every start, while an imported module's bytecode is cached in __pycache__
# (~5 ms of each cold start; see runtimes/README.md for pre-compiling on a read-only mount).
import _wisp_runtime

_wisp_runtime.main()
