number = int(input("Enter a number: "))

def show_table():
    for count in range(1, 11):
        print(number, "x", count, "=", number * count)

show_table()
