from quorumkit.cli import main

main()
