from verbund112.cli import main

main()
