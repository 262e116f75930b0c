from localseek.cli import main

main()
