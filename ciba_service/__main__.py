from ciba_service.cli import main

main()
