from aiposter.cli import main

main()
