from vpcctl.cli.main import main

main()
