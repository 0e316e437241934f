print("esft")
