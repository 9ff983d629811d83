from infership.cli import main

main()
