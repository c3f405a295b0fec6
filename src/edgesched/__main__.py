from edgesched.cli import main

main()
