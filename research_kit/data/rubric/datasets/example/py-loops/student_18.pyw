def show_row(number, times):
    print(number, "x", times, "=", number * times)


number = int(input("Number please: "))
for times in range(10, 11):
    show_row(number, times)
