from vpcctl.cli import main

main()
